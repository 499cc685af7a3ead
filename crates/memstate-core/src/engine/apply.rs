//! The apply side: turning records read from the stream into model changes.
//!
//! Everything here is deterministic given the log: the applied index, the
//! de-duplication window, leadership and the model itself come out the same on
//! every node that reads the same records.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::replicated::{Admission, Opened, Replicated};
use crate::dedup::Rejection;
use crate::envelope::{CommandId, EncodedCommand, Envelope, NodeId};
use crate::error::{Error, HaltReason};
use crate::events::RawEvent;
use crate::model::{CommandContext, Model, upcast_to_current};
use crate::settings::{ApplyMode, Settings};
use crate::skip::{RecordSkip, SkipEntry, SkipList};
use crate::stream::{Cursor, Record, Stream};

/// Counters that describe this node's reading, not replicated.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) redeliveries_dropped: u64,
    pub(crate) duplicates_dropped: u64,
    pub(crate) bad_records_skipped: u64,
    pub(crate) commands_applied: u64,
    /// Commands refused because they did not come from the current leader
    /// in the current epoch (single-leader mode).
    pub(crate) commands_fenced: u64,
    /// Accepted claims and heartbeats of the current leader applied: each is
    /// a sign of life the leadership driver measures silence from.
    pub(crate) leader_signals: u64,
}

/// How an envelope ended, sent to the node that waits for it.
#[derive(Debug)]
pub(crate) enum Completion<M: Model> {
    /// A command was applied; its result.
    Applied {
        index: u64,
        result: Result<M::Output, M::Error>,
    },
    /// A control envelope was applied; `accepted` says whether it took effect
    /// (a claim that won its epoch, a heartbeat of the current leader; sync
    /// and Genesis markers always do).
    Marker { index: u64, accepted: bool },
    /// The envelope was not applied.
    Failed(Error),
}

/// The outcome of one envelope, to hand to its waiter.
pub(crate) type Outcomes<M> = Vec<(CommandId, Completion<M>)>;

/// Applies records to a model. Owns no locks: the engine holds them.
pub(crate) struct Applier<'a, M: Model> {
    pub(crate) stream: &'a dyn Stream,
    /// This node: a fenced copy answers only a waiter of its own origin.
    pub(crate) node_id: &'a NodeId,
    pub(crate) local_settings: &'a Settings,
    pub(crate) skip: &'a SkipList,
    pub(crate) state: &'a mut Replicated,
    pub(crate) counters: &'a mut Counters,
    pub(crate) model: &'a mut M,
    pub(crate) outcomes: &'a mut Outcomes<M>,
    /// Events of the commands that succeeded, in log order.
    pub(crate) events: &'a mut Vec<RawEvent>,
}

impl<M: Model> Applier<'_, M> {
    /// Applies one record. `Err` halts the engine.
    pub(crate) fn apply_record(&mut self, record: Record) -> Result<(), HaltReason> {
        self.apply_record_until(record, &mut |_, _| false)
            .map(|_| ())
    }

    /// Applies one record, but stops before the first envelope for which
    /// `stop(envelope, the index it would get)` holds (time travel); returns
    /// whether it stopped. A record it stops in is not marked applied.
    pub(crate) fn apply_record_until(
        &mut self,
        record: Record,
        stop: &mut dyn FnMut(&Envelope, u64) -> bool,
    ) -> Result<bool, HaltReason> {
        match self.state.open_record(self.stream, &record, self.skip)? {
            Opened::Redelivery => self.counters.redeliveries_dropped += 1,
            Opened::SkippedBadRecord => self.counters.bad_records_skipped += 1,
            Opened::Frame(envelopes) => {
                for envelope in envelopes {
                    if stop(&envelope, self.state.applied_index + 1) {
                        return Ok(true);
                    }
                    self.apply_envelope(envelope, &record)?;
                }
                self.state.cursor = Some(record.cursor);
            }
        }
        Ok(false)
    }

    fn complete(&mut self, id: CommandId, completion: Completion<M>) {
        self.outcomes.push((id, completion));
    }

    /// Records a deterministic rejection (a retry is answered with it) and
    /// fails the waiter with `error`.
    fn reject(&mut self, envelope: &Envelope, why: Rejection, error: Error) {
        self.state.decide(envelope, Some(why));
        self.complete(envelope.id, Completion::Failed(error));
    }

    fn apply_envelope(
        &mut self,
        mut envelope: Envelope,
        record: &Record,
    ) -> Result<(), HaltReason> {
        let cursor = &record.cursor;
        let first = self.state.genesis.is_none();
        let (genesis, admission) = self.state.admit(&mut envelope, cursor)?;
        if first {
            check_settings(self.local_settings, &genesis)?;
        }
        let index = self.state.applied_index;
        let id = envelope.id;
        let value = match admission {
            Admission::Duplicate(seen) => {
                self.counters.duplicates_dropped += 1;
                let error = match seen.rejected {
                    None => Error::AlreadyApplied {
                        command_id: id,
                        index: seen.index,
                    },
                    Some(reason) => Error::AlreadyRejected {
                        command_id: id,
                        index: seen.index,
                        reason,
                    },
                };
                self.complete(id, Completion::Failed(error));
                return Ok(());
            }
            Admission::Control {
                accepted,
                leader_signal,
            } => {
                if leader_signal {
                    self.counters.leader_signals += 1;
                }
                // Stop before anything of a version this build cannot read.
                // `skip_commands` does not cover a control message: the way
                // past an activation is its whole record.
                let active = self.state.versions.active;
                if active > M::VERSION {
                    return Err(HaltReason::UpgradeRequired {
                        index,
                        version: active,
                        reads: M::VERSION,
                        skip: SkipEntry::Record(RecordSkip::of(record)),
                    });
                }
                self.complete(id, Completion::Marker { index, accepted });
                return Ok(());
            }
            Admission::Fenced { leader, epoch } => {
                // Not decided: the id stays free for a retry on the leader. A
                // waiter here for the same id is that retry when the fenced
                // copy came from elsewhere: its own copy is still to come.
                self.counters.commands_fenced += 1;
                if envelope.origin == *self.node_id {
                    self.complete(id, Completion::Failed(Error::NotLeader { leader, epoch }));
                }
                return Ok(());
            }
            Admission::Command(value) => value,
        };
        if self.skip.commands.contains(&id) {
            tracing::warn!(command_id = %id, index, "skipping a command listed in skip_commands");
            self.reject(&envelope, Rejection::Skipped, Error::Skipped(id));
            return Ok(());
        }
        let command = decode_command::<M>(&envelope, value, index, cursor)?;
        let mut ctx = CommandContext::new(id, &envelope.origin, envelope.ts, index);
        let completion = match genesis.apply_mode {
            ApplyMode::Direct => {
                let model = &mut *self.model;
                match catch_unwind(AssertUnwindSafe(|| model.apply(command, &mut ctx))) {
                    // The model's changes stay (direct mode cannot undo them);
                    // its events are dropped with the failed command.
                    Ok(Ok(_)) if ctx.emitted.failure.is_some() => {
                        Completion::Failed(event_encode_error(id, &ctx))
                    }
                    Ok(result) => Completion::Applied { index, result },
                    Err(panic) => {
                        let reason = HaltReason::Poisoned {
                            command_id: id,
                            message: panic_message(panic.as_ref()),
                        };
                        self.complete(id, Completion::Failed(Error::Halted(reason.clone())));
                        return Err(reason);
                    }
                }
            }
            ApplyMode::Safe => {
                let mut copy = self.model.clone();
                match catch_unwind(AssertUnwindSafe(|| copy.apply(command, &mut ctx))) {
                    Ok(Ok(_)) if ctx.emitted.failure.is_some() => {
                        Completion::Failed(event_encode_error(id, &ctx))
                    }
                    Ok(Ok(output)) => {
                        *self.model = copy;
                        Completion::Applied {
                            index,
                            result: Ok(output),
                        }
                    }
                    Ok(Err(error)) => Completion::Applied {
                        index,
                        result: Err(error),
                    },
                    Err(panic) => {
                        let message = panic_message(panic.as_ref());
                        let error = Error::CommandPanicked {
                            command_id: id,
                            message: message.clone(),
                        };
                        self.counters.commands_applied += 1;
                        self.reject(&envelope, Rejection::Panicked { message }, error);
                        return Ok(());
                    }
                }
            }
        };
        self.state.decide(&envelope, None);
        self.counters.commands_applied += 1;
        if let Completion::Applied { result: Ok(_), .. } = &completion {
            let emitted = std::mem::take(&mut ctx.emitted);
            self.events.extend(emitted.into_raw(index, id));
        }
        self.complete(id, completion);
        Ok(())
    }
}

/// Decodes a command for this build: a command written at an older model
/// version is upcast first, one step per version. A command this build
/// cannot read halts the engine, whatever the bad-record policy: another
/// build wrote it, and skipping it here while others apply it would fork the
/// cluster.
fn decode_command<M: Model>(
    envelope: &Envelope,
    command: EncodedCommand,
    index: u64,
    cursor: &Cursor,
) -> Result<M::Command, HaltReason> {
    let version = envelope.model_version;
    if version > M::VERSION {
        return Err(HaltReason::UpgradeRequired {
            index,
            version,
            reads: M::VERSION,
            skip: SkipEntry::Command(envelope.id),
        });
    }
    let decoded = if version == M::VERSION {
        // The common case: the encoding decodes straight into the command type.
        command.decode().map_err(|e| e.to_string())
    } else {
        command
            .to_value()
            .map_err(|e| e.to_string())
            .and_then(|value| upcast_to_current::<M>(version, value))
            .and_then(|value| serde_json::from_value(value).map_err(|e| e.to_string()))
    };
    decoded.map_err(|reason| HaltReason::UndecodableCommand {
        index,
        command_id: envelope.id,
        cursor: cursor.clone(),
        version,
        reads: M::VERSION,
        reason,
    })
}

/// Refuses to run a log under settings other than its own.
pub(crate) fn check_settings(local: &Settings, stream: &Settings) -> Result<(), HaltReason> {
    let differences = local.differences(stream);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(HaltReason::SettingsMismatch { differences })
    }
}

/// A command whose event could not be serialized fails, on every node alike.
fn event_encode_error(command_id: CommandId, ctx: &CommandContext<'_>) -> Error {
    Error::EventEncode {
        command_id,
        reason: ctx.emitted.failure.clone().unwrap_or_default(),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
