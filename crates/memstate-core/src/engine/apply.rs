//! The apply side: turning records read from the stream into model changes.
//!
//! Everything here is deterministic given the log: the applied index, the
//! de-duplication window, leadership and the model itself come out the same on
//! every node that reads the same records.

use std::any::Any;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::replicated::Replicated;
use crate::envelope::{Body, CommandId, Control, Envelope, FrameError, NodeId, decode_frame};
use crate::error::{Error, HaltReason};
use crate::model::{CommandContext, Model};
use crate::settings::{ApplyMode, BadRecordPolicy, Settings, WriteMode};
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
    pub(crate) local_settings: &'a Settings,
    pub(crate) skip: &'a HashSet<CommandId>,
    pub(crate) state: &'a mut Replicated,
    pub(crate) counters: &'a mut Counters,
    pub(crate) model: &'a mut M,
    pub(crate) outcomes: &'a mut Outcomes<M>,
}

impl<M: Model> Applier<'_, M> {
    /// Applies one record. `Err` halts the engine.
    pub(crate) fn apply_record(&mut self, record: Record) -> Result<(), HaltReason> {
        if let Some(last) = &self.state.cursor {
            match self.stream.compare_cursors(&record.cursor, last) {
                Ok(Ordering::Greater) => {}
                Ok(_) => {
                    // A redelivery (at-least-once reader, resubscription): already applied.
                    self.counters.redeliveries_dropped += 1;
                    return Ok(());
                }
                Err(e) => return Err(HaltReason::StreamFailed(e.to_string())),
            }
        }
        let envelopes = match decode_frame(&record.payload) {
            Ok(envelopes) => envelopes,
            Err(FrameError::UnknownVersion { found, supported }) => {
                return Err(HaltReason::UnknownFormat {
                    cursor: record.cursor,
                    found,
                    supported,
                });
            }
            Err(FrameError::NotAFrame(reason)) => {
                let Some(genesis) = &self.state.genesis else {
                    return Err(HaltReason::HistoryMissing {
                        first: record.cursor,
                    });
                };
                return match genesis.bad_records {
                    BadRecordPolicy::Skip => {
                        tracing::warn!(cursor = %record.cursor, %reason, "skipping a record that is not a memstate frame");
                        self.counters.bad_records_skipped += 1;
                        self.state.cursor = Some(record.cursor);
                        Ok(())
                    }
                    BadRecordPolicy::Halt => Err(HaltReason::BadRecord {
                        cursor: record.cursor,
                        reason,
                    }),
                };
            }
        };
        for envelope in envelopes {
            self.apply_envelope(envelope, &record.cursor)?;
        }
        self.state.cursor = Some(record.cursor);
        Ok(())
    }

    fn genesis(&mut self, envelope: &Envelope, cursor: &Cursor) -> Result<Settings, HaltReason> {
        if let Some(genesis) = &self.state.genesis {
            return Ok(genesis.clone());
        }
        let Body::Control(Control::Genesis(settings)) = &envelope.body else {
            return Err(HaltReason::HistoryMissing {
                first: cursor.clone(),
            });
        };
        self.state.genesis = Some(settings.clone());
        check_settings(self.local_settings, settings)?;
        Ok(settings.clone())
    }

    fn complete(&mut self, id: CommandId, completion: Completion<M>) {
        self.outcomes.push((id, completion));
    }

    fn apply_envelope(&mut self, envelope: Envelope, cursor: &Cursor) -> Result<(), HaltReason> {
        let genesis = self.genesis(&envelope, cursor)?;
        self.state.applied_index += 1;
        let index = self.state.applied_index;
        if let Some(first) = self.state.dedup.get(&envelope.id) {
            self.counters.duplicates_dropped += 1;
            self.complete(
                envelope.id,
                Completion::Failed(Error::AlreadyApplied {
                    command_id: envelope.id,
                    index: first,
                }),
            );
            return Ok(());
        }
        self.state
            .dedup
            .insert(envelope.id, index, envelope.ts, &genesis.dedup);

        let value = match envelope.body {
            Body::Control(control) => {
                let accepted = self.apply_control(&control, &envelope.origin, envelope.ts);
                self.complete(envelope.id, Completion::Marker { index, accepted });
                return Ok(());
            }
            Body::Command(value) => value,
        };
        if self.skip.contains(&envelope.id) {
            tracing::warn!(command_id = %envelope.id, index, "skipping a command listed in skip_commands");
            self.complete(envelope.id, Completion::Failed(Error::Skipped(envelope.id)));
            return Ok(());
        }
        if genesis.write_mode == WriteMode::SingleLeader {
            let lead = &self.state.leadership;
            let from_leader = lead.leader.as_ref() == Some(&envelope.origin);
            if !from_leader || envelope.epoch != Some(lead.epoch) {
                let error = Error::NotLeader {
                    leader: lead.leader.clone(),
                    epoch: lead.epoch,
                };
                self.counters.commands_fenced += 1;
                self.complete(envelope.id, Completion::Failed(error));
                return Ok(());
            }
        }
        let command: M::Command = match serde_json::from_value(value) {
            Ok(command) => command,
            Err(e) => {
                return match genesis.bad_records {
                    BadRecordPolicy::Skip => {
                        tracing::warn!(command_id = %envelope.id, error = %e, "skipping a command this model cannot decode");
                        self.counters.bad_records_skipped += 1;
                        let error = Error::UndecodableCommand {
                            command_id: envelope.id,
                            reason: e.to_string(),
                        };
                        self.complete(envelope.id, Completion::Failed(error));
                        Ok(())
                    }
                    BadRecordPolicy::Halt => Err(HaltReason::BadRecord {
                        cursor: cursor.clone(),
                        reason: format!("command {} cannot be decoded: {e}", envelope.id),
                    }),
                };
            }
        };
        let mut ctx = CommandContext::new(envelope.id, &envelope.origin, envelope.ts, index);
        let completion = match genesis.apply_mode {
            ApplyMode::Direct => {
                let model = &mut *self.model;
                match catch_unwind(AssertUnwindSafe(|| model.apply(command, &mut ctx))) {
                    Ok(result) => Completion::Applied { index, result },
                    Err(panic) => {
                        let reason = HaltReason::Poisoned {
                            command_id: envelope.id,
                            message: panic_message(panic.as_ref()),
                        };
                        self.complete(
                            envelope.id,
                            Completion::Failed(Error::Halted(reason.clone())),
                        );
                        return Err(reason);
                    }
                }
            }
            ApplyMode::Safe => {
                let mut copy = self.model.clone();
                match catch_unwind(AssertUnwindSafe(|| copy.apply(command, &mut ctx))) {
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
                    Err(panic) => Completion::Failed(Error::CommandPanicked {
                        command_id: envelope.id,
                        message: panic_message(panic.as_ref()),
                    }),
                }
            }
        };
        self.counters.commands_applied += 1;
        self.complete(envelope.id, completion);
        Ok(())
    }

    /// Applies a control message; returns whether it took effect.
    fn apply_control(&mut self, control: &Control, origin: &NodeId, ts: u64) -> bool {
        let lead = &mut self.state.leadership;
        let leader_signal = match control {
            Control::AssumeLeadership { epoch } => {
                // First claim in log order for the next epoch wins; every node
                // sees the same order, so every node elects the same leader.
                // A claim for an epoch already taken (or not yet reachable)
                // changes nothing.
                if *epoch == lead.epoch + 1 {
                    lead.epoch = *epoch;
                    lead.leader = Some(origin.clone());
                    lead.last_seen_ts = ts;
                    true
                } else {
                    false
                }
            }
            Control::Heartbeat { epoch } => {
                // Only the current leader's heartbeat in its own epoch counts:
                // a deposed leader that has not noticed yet is not alive as leader.
                if *epoch == lead.epoch && lead.leader.as_ref() == Some(origin) {
                    lead.last_seen_ts = lead.last_seen_ts.max(ts);
                    true
                } else {
                    false
                }
            }
            Control::Genesis(_) | Control::Sync => return true,
        };
        if leader_signal {
            self.counters.leader_signals += 1;
        }
        leader_signal
    }
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

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
