//! Submission: from a caller to the writer and back.
//!
//! A caller's envelope is registered as a *waiter* under its id, handed to
//! the writer (which packs it into a frame, see `writer.rs`), and resolved by
//! the apply loop when the envelope comes back from the stream. Halting and
//! shutting down drain the waiters with the reason. Control messages
//! (Genesis, Sync, leadership claims, heartbeats) all travel the same
//! [`Node::round_trip`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::Executed;
use super::Node;
use super::apply::Completion;
use super::stats::Status;
use super::writer::WriterGauge;
use crate::codec::Codec;
use crate::envelope::{
    Body, CommandId, Control, EncodedCommand, Envelope, FRAME_OVERHEAD, encode_envelope_as,
    frame_codec,
};
use crate::error::{Error, ExecuteError, HaltReason};
use crate::model::Model;
use crate::settings::WriteMode;
use crate::stream::StreamError;

/// An encoded envelope on its way to the writer.
pub(crate) struct Submission {
    pub(crate) id: CommandId,
    /// The codec of the frame it goes in ([`frame_codec`]).
    pub(crate) codec: Codec,
    pub(crate) bytes: Vec<u8>,
}

/// A control envelope read back and applied.
#[derive(Clone, Copy, Debug)]
pub(super) struct MarkerApplied {
    /// Its applied index.
    pub(super) index: u64,
    /// Whether it took effect (see `Completion::Marker`).
    pub(super) accepted: bool,
}

/// Waiters, the queue to the writer, and the node's life cycle.
pub(super) struct Submitter<M: Model> {
    waiters: Mutex<HashMap<CommandId, oneshot::Sender<Completion<M>>>>,
    queue: mpsc::Sender<Submission>,
    pub(super) status: watch::Sender<Status>,
    pub(super) shutdown: watch::Sender<bool>,
    /// The writer's window of appends in flight, as it last published it.
    pub(super) gauge: Arc<WriterGauge>,
}

impl<M: Model> Submitter<M> {
    /// A submitter handing envelopes to `queue` (the writer's end).
    pub(super) fn new(queue: mpsc::Sender<Submission>) -> Self {
        Self {
            waiters: Mutex::new(HashMap::new()),
            queue,
            status: watch::channel(Status::Starting).0,
            shutdown: watch::channel(false).0,
            gauge: Arc::default(),
        }
    }

    pub(super) fn check_running(&self) -> Result<(), Error> {
        match &*self.status.borrow() {
            Status::Starting | Status::Running => Ok(()),
            Status::Halted(reason) => Err(Error::Halted(reason.clone())),
            Status::Stopped => Err(Error::ShutDown),
        }
    }

    /// Marks a started engine as serving.
    pub(super) fn mark_running(&self) {
        self.status.send_if_modified(|s| {
            if *s == Status::Starting {
                *s = Status::Running;
                true
            } else {
                false
            }
        });
    }

    /// The error a waiter gets when its channel closed without an answer.
    fn terminal_error(&self) -> Error {
        match self.check_running() {
            Err(e) => e,
            Ok(()) => Error::ShutDown,
        }
    }

    /// Hands each envelope's outcome to the caller waiting for it, if any.
    pub(super) fn resolve(&self, outcomes: Vec<(CommandId, Completion<M>)>) {
        if outcomes.is_empty() {
            return;
        }
        let mut waiters = self.waiters.lock();
        for (id, completion) in outcomes {
            if let Some(tx) = waiters.remove(&id) {
                let _ = tx.send(completion);
            }
        }
    }

    /// Fails the waiters of one append that failed.
    pub(super) fn fail_all(&self, ids: Vec<CommandId>, error: &Error) {
        let mut waiters = self.waiters.lock();
        for id in ids {
            if let Some(tx) = waiters.remove(&id) {
                let _ = tx.send(Completion::Failed(clone_error(error)));
            }
        }
    }

    fn drain_waiters(&self, error: impl Fn() -> Error) {
        let drained: Vec<_> = self.waiters.lock().drain().collect();
        for (_, tx) in drained {
            let _ = tx.send(Completion::Failed(error()));
        }
    }

    pub(super) fn halt(&self, reason: HaltReason) {
        self.status.send_replace(Status::Halted(reason.clone()));
        self.drain_waiters(|| Error::Halted(reason.clone()));
    }

    pub(super) fn begin_shutdown(&self) {
        self.status.send_if_modified(|s| match s {
            Status::Halted(_) | Status::Stopped => false,
            _ => {
                *s = Status::Stopped;
                true
            }
        });
        self.shutdown.send_replace(true);
        let status = self.status.borrow().clone();
        self.drain_waiters(|| match &status {
            Status::Halted(r) => Error::Halted(r.clone()),
            _ => Error::ShutDown,
        });
    }
}

impl<M: Model> Node<M> {
    /// `Ok` while the engine is starting or running.
    pub(super) fn check_running(&self) -> Result<(), Error> {
        self.submitter.check_running()
    }

    /// Stops applying for good: every waiter and every later call gets
    /// [`Error::Halted`] with `reason`.
    pub(super) fn halt(&self, reason: HaltReason) {
        tracing::error!(node = %self.info.node_id, %reason, "engine halted");
        self.submitter.halt(reason);
        // Wake the readers waiting on progress so they see the new status.
        self.applied.wake_readers();
    }

    /// Starts shutting down: waiters get [`Error::ShutDown`] (or the halt reason).
    pub(super) fn begin_shutdown(&self) {
        self.submitter.begin_shutdown();
        self.applied.wake_readers();
    }

    /// Shuts down and waits for the background tasks to end.
    pub(super) async fn shutdown(&self) {
        self.begin_shutdown();
        let tasks: Vec<JoinHandle<()>> = self.tasks.lock().drain(..).collect();
        for task in tasks {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("an engine task did not stop within 10 s");
            }
        }
    }

    /// Wraps `command` under `id`, stamps the leader's epoch in single-leader
    /// mode, submits it and turns its completion into the caller's result.
    pub(super) async fn execute(
        &self,
        id: CommandId,
        command: M::Command,
    ) -> Result<Executed<M::Output>, ExecuteError<M::Error>> {
        self.check_running()?;
        let (value, model_version) = self.encode_at_active(&command)?;
        let mut envelope = self.info.envelope(Body::Command(value));
        envelope.id = id;
        envelope.model_version = model_version;
        if self.info.settings.write_mode == WriteMode::SingleLeader {
            let lead = self.applied.state.lock().leadership.clone();
            if lead.leader.as_ref() != Some(&self.info.node_id) {
                return Err(Error::NotLeader {
                    leader: lead.leader,
                    epoch: lead.epoch,
                }
                .into());
            }
            envelope.epoch = Some(lead.epoch);
        }
        let completion = self
            .submit(envelope, self.info.config.execute_timeout)
            .await?;
        match completion {
            Completion::Applied { index, result } => {
                self.reads.wrote(index);
                match result {
                    Ok(output) => Ok(Executed { output, index }),
                    Err(error) => Err(ExecuteError::Rejected { error, index }),
                }
            }
            Completion::Failed(e) => Err(ExecuteError::Engine(e)),
            // The applier answers a command envelope as applied or failed; a
            // marker could only come from a control envelope under this id.
            Completion::Marker { index, .. } => Err(ExecuteError::Engine(Error::Internal(
                format!("command {id} was answered as a control message applied at index {index}"),
            ))),
        }
    }

    /// Encodes `command` at the stream's active model version (writers write
    /// at it, so every live node can read it): refused when the command needs
    /// a newer version, downcast one step at a time when this build is newer.
    fn encode_at_active(&self, command: &M::Command) -> Result<(EncodedCommand, u32), Error> {
        let codec = self.info.settings.command_codec;
        let active = self.applied.state.lock().versions.active;
        let needed = M::command_version(command);
        if needed > active {
            return Err(Error::VersionNotActive { needed, active });
        }
        if active >= M::VERSION {
            // The common case: encoded once, straight to what the frame embeds.
            let encoded = EncodedCommand::encode_as(codec, command).map_err(Error::Encode)?;
            return Ok((encoded, M::VERSION));
        }
        let mut value = serde_json::to_value(command).map_err(Error::Encode)?;
        for to in (active..M::VERSION).rev() {
            value = M::downcast(to, value).map_err(|reason| Error::Downcast {
                version: to,
                reason,
            })?;
        }
        let encoded = EncodedCommand::from_value_as(codec, &value).map_err(Error::Encode)?;
        Ok((encoded, active))
    }

    /// Hands an envelope to the writer and waits for its completion.
    pub(super) async fn submit(
        &self,
        envelope: Envelope,
        timeout: Duration,
    ) -> Result<Completion<M>, Error> {
        let id = envelope.id;
        let codec = frame_codec(self.info.settings.command_codec, &envelope.body);
        let bytes = encode_envelope_as(codec, &envelope).map_err(Error::Encode)?;
        let size = bytes.len() + FRAME_OVERHEAD;
        if size > self.info.frame_limit {
            return Err(Error::CommandTooLarge {
                command_id: id,
                size,
                limit: self.info.frame_limit,
            });
        }
        let submitter = &self.submitter;
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = submitter.waiters.lock();
            if waiters.contains_key(&id) {
                return Err(Error::DuplicateInFlight(id));
            }
            waiters.insert(id, tx);
        }
        // A halt or shutdown drains the waiters after changing the status:
        // checking again here closes the gap with a drain that ran before we
        // registered.
        if let Err(e) = submitter.check_running() {
            submitter.waiters.lock().remove(&id);
            return Err(e);
        }
        let wait = async {
            submitter
                .queue
                .send(Submission { id, codec, bytes })
                .await
                .map_err(|_| Error::ShutDown)?;
            rx.await.map_err(|_| submitter.terminal_error())
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(completion)) => Ok(completion),
            Ok(Err(e)) => {
                submitter.waiters.lock().remove(&id);
                Err(e)
            }
            Err(_) => {
                submitter.waiters.lock().remove(&id);
                Err(Error::Timeout {
                    waiting_for: format!(
                        "command {id} to come back from {}",
                        self.info.stream.describe()
                    ),
                    after: timeout,
                })
            }
        }
    }

    /// The one control round trip: appends `control` from this node, waits
    /// until it is read back and applied, and reports whether it took effect.
    ///
    /// Reading one's own marker back proves that everything the stream held
    /// when it was sent is applied here, so the round trip also records the
    /// send time as this node's latest catch-up.
    pub(super) async fn round_trip(
        &self,
        control: Control,
        timeout: Duration,
    ) -> Result<MarkerApplied, Error> {
        let sent_at = Instant::now();
        let envelope = self.info.envelope(Body::Control(control));
        let id = envelope.id;
        match self.submit(envelope, timeout).await? {
            Completion::Marker { index, accepted } => {
                self.reads.tail.lock().caught_up(sent_at);
                Ok(MarkerApplied { index, accepted })
            }
            Completion::Failed(e) => Err(e),
            // The applier answers a control envelope with a marker; only a
            // command envelope under the same random id could answer otherwise.
            Completion::Applied { index, .. } => Err(Error::Internal(format!(
                "control message {id} was answered as a command applied at index {index}"
            ))),
        }
    }
}

/// Errors are not `Clone` (they carry sources); waiters of one failed append
/// each get an equivalent error.
fn clone_error(error: &Error) -> Error {
    match error {
        Error::ShutDown => Error::ShutDown,
        Error::Halted(r) => Error::Halted(r.clone()),
        Error::Timeout { waiting_for, after } => Error::Timeout {
            waiting_for: waiting_for.clone(),
            after: *after,
        },
        Error::Stream(StreamError::RecordTooLarge { size, limit }) => {
            Error::Stream(StreamError::RecordTooLarge {
                size: *size,
                limit: *limit,
            })
        }
        Error::Stream(StreamError::Closed) => Error::Stream(StreamError::Closed),
        other => Error::Stream(StreamError::Ambiguous {
            reason: other.to_string(),
            source: None,
        }),
    }
}
