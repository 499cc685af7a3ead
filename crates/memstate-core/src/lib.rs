#![doc = include_str!("../README.md")]

pub mod codec;
pub mod consistency;
pub mod cursor;
mod dedup;
pub mod engine;
pub mod envelope;
pub mod error;
pub mod events;
pub mod history;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod settings;
pub mod skip;
pub mod snapshot;
pub mod stream;
pub mod truncation;

pub use codec::{Codec, EncodedCommand};
pub use consistency::Consistency;
pub use dedup::Rejection;
pub use engine::{
    AsOf, Engine, EngineBuilder, Executed, IntoStream, Lag, Leadership, LeadershipConfig,
    ModelVersions, PastState, Session, SnapshotStats, Stats, Status, TimeTravel,
};
pub use envelope::{
    Body, CommandId, CommandJson, Control, Envelope, FORMAT_VERSION, FrameError, NodeId,
};
pub use error::{Error, ExecuteError, HaltReason};
pub use events::{
    Event, EventError, EventModel, EventStats, EventSubscription, EventWindow, EventsFrom, RawEvent,
};
pub use memory::{MemoryStream, SubscriberFaults};
pub use model::{CommandContext, DeterministicRng, Model};
pub use settings::{ApplyMode, BadRecordPolicy, DedupWindow, Settings, WriteMode};
pub use skip::{ParseRecordSkipError, RecordSkip, SkipEntry};
pub use snapshot::{FileSnapshotStore, SnapshotError, SnapshotMeta, SnapshotPolicy, SnapshotStore};
pub use stream::{Capabilities, Cursor, Record, Stream, StreamError, Subscription};
