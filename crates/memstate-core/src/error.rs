//! Engine errors.

use std::fmt;
use std::time::Duration;

use crate::dedup::Rejection;
use crate::envelope::{CommandId, NodeId};
use crate::skip::{RecordSkip, SkipEntry};
use crate::snapshot::SnapshotError;
use crate::stream::{Cursor, StreamError};

/// Why an engine stopped applying. Once halted, every call returns
/// [`Error::Halted`] with this reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HaltReason {
    /// This node's settings differ from the stream's Genesis record.
    #[error("this node's settings differ from the stream's Genesis record ({}); configure every node alike", differences.join("; "))]
    SettingsMismatch {
        /// Each differing field: local vs stream.
        differences: Vec<String>,
    },
    /// The log does not start with a Genesis record: its beginning is missing.
    #[error(
        "the stream does not start at its beginning (first record {first} is not a Genesis record); its history was deleted or this is not a memstate stream — restore a snapshot that covers the gap or use a complete stream"
    )]
    HistoryMissing {
        /// The first record read.
        first: Cursor,
    },
    /// A frame written by a newer format version.
    #[error(
        "record {cursor} has frame format version {found}, newer than this build reads ({supported}); upgrade this node, or, if no node can apply it, pass over it on every node with skip_records [\"{skip}\"]"
    )]
    UnknownFormat {
        /// Where.
        cursor: Cursor,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
        /// The entry that passes over this record ([`EngineBuilder::skip_records`](crate::EngineBuilder::skip_records)).
        skip: RecordSkip,
    },
    /// A Genesis record names a command codec this build does not know: a
    /// newer build wrote it. Always a halt, whatever the bad-record policy
    /// (the record is a frame of a newer build, not foreign bytes); nothing
    /// from it on is applied.
    #[error(
        "record {cursor} is a Genesis record naming command codec {codec:?}, which this build does not know (it reads {known}): a newer build of memstate wrote {what}. Nothing from it on is applied here; upgrade this node to a build that reads {codec:?}{or_skip}",
        what = if .skip.is_some() { "this record" } else { "this stream" },
        known = crate::envelope::known_codecs(),
        or_skip = or_skip(.skip.as_ref()),
    )]
    UnknownCodec {
        /// Where.
        cursor: Cursor,
        /// The codec as the record names it.
        codec: String,
        /// The entry that passes over the record, when it restates the
        /// settings of a stream already started; `None` for the stream's
        /// own Genesis record, which nothing gets past (the stream is of a
        /// codec this build cannot read).
        skip: Option<RecordSkip>,
    },
    /// Bytes that are not a frame, under the `Halt` bad-record policy.
    #[error(
        "record {cursor} is not a memstate frame ({reason}) and the stream's policy is to halt; to pass over it on every node: skip_records [\"{skip}\"]"
    )]
    BadRecord {
        /// Where.
        cursor: Cursor,
        /// Why it was refused.
        reason: String,
        /// The entry that passes over it ([`EngineBuilder::skip_records`](crate::EngineBuilder::skip_records)).
        skip: RecordSkip,
    },
    /// A command panicked outside safe mode; the model may be half-mutated.
    #[error(
        "command {command_id} panicked while being applied ({message}); the engine is poisoned. Fix the model, or pass over the command on every node with skip_commands [\"{command_id}\"]"
    )]
    Poisoned {
        /// The command.
        command_id: CommandId,
        /// The panic message.
        message: String,
    },
    /// The subscription failed and could not be resumed.
    #[error("the stream subscription failed: {0}")]
    StreamFailed(String),
    /// A well-formed envelope holds a command this build cannot decode:
    /// another build wrote it. Skipping it here while other nodes apply it
    /// would fork the cluster, so this node stops before it, whatever the
    /// bad-record policy says (that policy covers bytes that are not frames).
    #[error(
        "command {command_id} at index {index} (record {cursor}) was written at model version {version} and this build (model version {reads}) cannot decode it: {reason}. Nothing from it on is applied here. Run a build that reads it (if the command type changed, declare a new Model::VERSION with an upcast step; see docs/upgrades.md), or, if no build will read it, pass over it on every node with skip_commands [\"{command_id}\"]"
    )]
    UndecodableCommand {
        /// The command's applied index.
        index: u64,
        /// The command.
        command_id: CommandId,
        /// The record that holds it.
        cursor: Cursor,
        /// The model version the command was written at.
        version: u32,
        /// The newest model version this build reads.
        reads: u32,
        /// The decoder's (or the upcaster's) message.
        reason: String,
    },
    /// The log needs a newer model version than this build reads: an
    /// activation of that version, or a command written at it.
    #[error(
        "index {index} of the log needs model version {version} but this build reads up to model version {reads}; nothing of version {version} was applied here: upgrade this node to a build of model version {version} or newer, or, if no node will ever run one, pass over it on every node with {skip}"
    )]
    UpgradeRequired {
        /// Where in the log.
        index: u64,
        /// The model version needed.
        version: u32,
        /// The newest model version this build reads.
        reads: u32,
        /// The entry that passes over what needs the newer version: the
        /// command's id for a command, the whole record for an activation
        /// (a control message, which `skip_commands` does not cover).
        skip: SkipEntry,
    },
}

impl HaltReason {
    /// The entry that gets every node past this halt, printed in the halt
    /// message; `None` for a halt no skip gets past (settings, a missing
    /// beginning of the log, a failed subscription).
    pub fn skip(&self) -> Option<SkipEntry> {
        match self {
            Self::UnknownFormat { skip, .. } | Self::BadRecord { skip, .. } => {
                Some(SkipEntry::Record(skip.clone()))
            }
            Self::UpgradeRequired { skip, .. } => Some(skip.clone()),
            Self::UnknownCodec { skip, .. } => skip.clone().map(SkipEntry::Record),
            Self::Poisoned { command_id, .. } | Self::UndecodableCommand { command_id, .. } => {
                Some(SkipEntry::Command(*command_id))
            }
            Self::SettingsMismatch { .. } | Self::HistoryMissing { .. } | Self::StreamFailed(_) => {
                None
            }
        }
    }
}

/// The way past an [`HaltReason::UnknownCodec`] halt by a skip, when there is one.
fn or_skip(skip: Option<&RecordSkip>) -> String {
    skip.map(|s| {
        format!(", or, if no node will ever read it, pass over it on every node with skip_records [\"{s}\"]")
    })
    .unwrap_or_default()
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The engine stopped applying; see the reason.
    #[error("engine halted: {0}")]
    Halted(HaltReason),
    /// The engine was shut down (or is shutting down).
    #[error("engine is shut down")]
    ShutDown,
    /// A command does not fit into one record of this stream; nothing was written.
    #[error(
        "command {command_id} encodes to {size} bytes but a frame may hold at most {limit} bytes on this stream; nothing was written"
    )]
    CommandTooLarge {
        /// The command.
        command_id: CommandId,
        /// Its encoded size with the frame wrapper.
        size: usize,
        /// The stream's record-size limit.
        limit: usize,
    },
    /// The command could not be serialized.
    #[error("command could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
    /// A command with this id is already awaiting its result on this node.
    #[error("command {0} is already in flight on this node")]
    DuplicateInFlight(CommandId),
    /// The command id had been applied before (a retry of a command that did
    /// land): it was not applied again.
    #[error("command {command_id} was already applied at index {index}; not applied again")]
    AlreadyApplied {
        /// The command.
        command_id: CommandId,
        /// The applied index of the first copy.
        index: u64,
    },
    /// A command under this id was deterministically rejected before (skipped,
    /// undecodable, or panicked in safe mode), identically on every node: it
    /// was not applied, and a retry under the same id is not applied either.
    #[error(
        "command {command_id} was rejected at index {index} ({reason}); not applied, and a retry under the same id is rejected alike"
    )]
    AlreadyRejected {
        /// The command.
        command_id: CommandId,
        /// The applied index of the copy that was rejected.
        index: u64,
        /// Why it was rejected.
        reason: Rejection,
    },
    /// The command is on this node's operator skip list.
    #[error("command {0} was skipped (listed in skip_commands)")]
    Skipped(CommandId),
    /// The command panicked in safe mode; the model is unchanged.
    #[error("command {command_id} panicked and was rolled back: {message}")]
    CommandPanicked {
        /// The command.
        command_id: CommandId,
        /// The panic message.
        message: String,
    },
    /// The command needs a newer model version than the stream's active
    /// one: nodes of older builds could not read it. Nothing was written.
    #[error(
        "this command needs model version {needed} but the stream's active model version is {active}; nothing was written. Upgrade every node, then activate version {needed} (memstate upgrade activate {needed})"
    )]
    VersionNotActive {
        /// The version the command needs.
        needed: u32,
        /// The stream's active version.
        active: u32,
    },
    /// The model's downcast step refused to encode the command at an older
    /// active version; nothing was written.
    #[error(
        "the command cannot be encoded at model version {version} (the stream's active version): {reason}; nothing was written"
    )]
    Downcast {
        /// The version it was to be encoded at.
        version: u32,
        /// The model's message.
        reason: String,
    },
    /// An activation was refused by the log's rules, identically on every node.
    #[error(
        "activation of model version {version} was refused (active version: {active}){}",
        blocking_text(blocking)
    )]
    ActivationRefused {
        /// The version asked for.
        version: u32,
        /// The active version, unchanged.
        active: u32,
        /// The live nodes that announced they cannot read it, with the newest
        /// version each reads (empty: the version is below the active one).
        blocking: Vec<(NodeId, u32)>,
    },
    /// The logged command could not be decoded into the model's command type.
    #[error("command {command_id} could not be decoded by this model: {reason}")]
    UndecodableCommand {
        /// The command.
        command_id: CommandId,
        /// The decoder's message.
        reason: String,
    },
    /// The command emitted an event that could not be serialized: the
    /// command failed, on every node alike, and none of its events were
    /// delivered. In safe mode the model is unchanged; in direct mode it
    /// keeps whatever the command did (emit before mutating).
    #[error("command {command_id} emitted an event that cannot be serialized: {reason}")]
    EventEncode {
        /// The command.
        command_id: CommandId,
        /// The serializer's message.
        reason: String,
    },
    /// Single-leader mode: the command did not come from the current leader.
    #[error("not the leader (current leader: {}, epoch {epoch})", leader.as_ref().map(|l| l.to_string()).unwrap_or_else(|| "none".into()))]
    NotLeader {
        /// The leader as this node knows it.
        leader: Option<NodeId>,
        /// The current epoch.
        epoch: u64,
    },
    /// A [`Consistency::BoundedStaleness`](crate::Consistency::BoundedStaleness)
    /// read could not be served: this node had not caught up with the stream
    /// recently enough, and catching up failed (cut off from the stream, or
    /// too far behind to finish within the read timeout).
    #[error("cannot serve a read within staleness bound {bound:?}: this node last caught up with the stream {}, and catching up failed: {source}", caught_up_age.map(|a| format!("{a:?} ago")).unwrap_or_else(|| "never".into()))]
    TooStale {
        /// The bound the read asked for.
        bound: Duration,
        /// How long ago this node was last known to be caught up, if ever.
        caught_up_age: Option<Duration>,
        /// Why catching up failed.
        #[source]
        source: Box<Error>,
    },
    /// A wait ran out of time. For `execute`, the command may still be applied later.
    #[error("timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// What was awaited.
        waiting_for: String,
        /// How long.
        after: Duration,
    },
    /// The engine was configured wrongly.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Taking, storing or restoring a snapshot failed. A failed snapshot
    /// write loses nothing: the log still holds every command.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A state the engine's own logic rules out was reached: a bug in
    /// memstate, not in the caller's input. Please report it with the message.
    #[error("internal error (a bug in memstate): {0}")]
    Internal(String),
}

fn blocking_text(blocking: &[(NodeId, u32)]) -> String {
    if blocking.is_empty() {
        return ": the active version never goes down".into();
    }
    let nodes: Vec<String> = blocking
        .iter()
        .map(|(node, reads)| format!("{node} reads up to {reads}"))
        .collect();
    format!(
        ": live nodes cannot read it ({}); upgrade them, or if a node is gone for good, forget it (memstate upgrade forget <node>)",
        nodes.join(", ")
    )
}

/// The failure of [`Engine::execute`](crate::Engine::execute): the model's own
/// domain error, or an engine error.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The command was applied and returned a domain error; the model is unchanged.
    Rejected {
        /// The model's error.
        error: E,
        /// The command's applied index.
        index: u64,
    },
    /// The engine or the stream failed.
    Engine(Error),
}

impl<E> ExecuteError<E> {
    /// The domain error, if that is what this is.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            Self::Rejected { error, .. } => Some(error),
            Self::Engine(_) => None,
        }
    }

    /// The engine error, if that is what this is.
    pub fn engine_error(&self) -> Option<&Error> {
        match self {
            Self::Rejected { .. } => None,
            Self::Engine(e) => Some(e),
        }
    }
}

impl<E> From<Error> for ExecuteError<E> {
    fn from(e: Error) -> Self {
        Self::Engine(e)
    }
}

impl<E: fmt::Display> fmt::Display for ExecuteError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected { error, index } => {
                write!(f, "command rejected at index {index}: {error}")
            }
            Self::Engine(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for ExecuteError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Rejected { .. } => None,
            Self::Engine(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> CommandId {
        CommandId::random()
    }

    /// Every halt a skip gets past names its entry, and prints it whole.
    #[test]
    fn each_halt_a_skip_gets_past_prints_its_entry() {
        let record = RecordSkip::new(Cursor::new("7"), 0x0123_abcd);
        let (poison, unknown, newer) = (id(), id(), id());
        let cases = [
            (
                HaltReason::UnknownFormat {
                    cursor: Cursor::new("7"),
                    found: 9,
                    supported: 1,
                    skip: record.clone(),
                },
                SkipEntry::Record(record.clone()),
            ),
            (
                HaltReason::BadRecord {
                    cursor: Cursor::new("7"),
                    reason: "garbage".into(),
                    skip: record.clone(),
                },
                SkipEntry::Record(record.clone()),
            ),
            (
                HaltReason::Poisoned {
                    command_id: poison,
                    message: "boom".into(),
                },
                SkipEntry::Command(poison),
            ),
            (
                HaltReason::UndecodableCommand {
                    index: 3,
                    command_id: unknown,
                    cursor: Cursor::new("7"),
                    version: 1,
                    reads: 1,
                    reason: "unknown variant".into(),
                },
                SkipEntry::Command(unknown),
            ),
            (
                HaltReason::UpgradeRequired {
                    index: 3,
                    version: 2,
                    reads: 1,
                    skip: SkipEntry::Command(newer),
                },
                SkipEntry::Command(newer),
            ),
            (
                HaltReason::UpgradeRequired {
                    index: 3,
                    version: 2,
                    reads: 1,
                    skip: SkipEntry::Record(record.clone()),
                },
                SkipEntry::Record(record.clone()),
            ),
            (
                HaltReason::UnknownCodec {
                    cursor: Cursor::new("7"),
                    codec: "cbor".into(),
                    skip: Some(record.clone()),
                },
                SkipEntry::Record(record.clone()),
            ),
        ];
        for (reason, entry) in cases {
            assert_eq!(reason.skip(), Some(entry.clone()), "{reason:?}");
            let message = reason.to_string();
            assert!(message.contains(&entry.to_string()), "{message}");
        }
        assert_eq!(
            SkipEntry::Record(record).to_string(),
            "skip_records [\"7#0123abcd\"]"
        );
        assert_eq!(
            SkipEntry::Command(poison).to_string(),
            format!("skip_commands [\"{poison}\"]")
        );
    }

    #[test]
    fn halts_no_skip_gets_past_name_no_entry() {
        for reason in [
            HaltReason::SettingsMismatch {
                differences: vec!["apply_mode".into()],
            },
            HaltReason::HistoryMissing {
                first: Cursor::new("4"),
            },
            HaltReason::StreamFailed("gone".into()),
            HaltReason::UnknownCodec {
                cursor: Cursor::new("0"),
                codec: "cbor".into(),
                skip: None,
            },
        ] {
            assert_eq!(reason.skip(), None, "{reason}");
            assert!(!reason.to_string().contains("skip_"), "{reason}");
        }
    }
}
